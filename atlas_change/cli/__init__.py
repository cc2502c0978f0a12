"""The command line: the argument parser (parser) and its longer help texts (helptext);
`atlas_change.__main__` dispatches each command to the library."""
