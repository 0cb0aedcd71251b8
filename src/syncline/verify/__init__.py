"""``syncline verify``: compare each view with the source by chunk checksums, list the
differing keys, and repair them through the log (see ARCHITECTURE.md, "Verify")."""
