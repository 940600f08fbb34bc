"""Every side effect of Conveyor: running commands, git, the artifact store."""
