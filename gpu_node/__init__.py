"""The GPU node: style engines, the local command line, and the daemon that dials the relay."""
