"""Print Management (PS3.4 Annex H): Print SCP, rendering, print jobs, Print SCU."""
