"""Static files of the public page, served by the relay (a package only so that
importlib.resources can find them when installed)."""
