"""Installing onevita into an OpenNebula front-end: the remotes tree and the config files it edits."""
