"""dimse layer; see DESIGN.md."""
