"""The `rft` command (thin: parse, call the library, print)."""
