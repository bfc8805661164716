"""The RT process seen from the control plane: its supervisor, the lease that
lets it actuate, and its actuation journal."""
