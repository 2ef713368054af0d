"""ul layer; see DESIGN.md."""
