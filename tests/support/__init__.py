"""What every test tier shares: constants, log capture, a server in a thread."""
