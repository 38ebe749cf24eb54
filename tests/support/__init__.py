"""Test infrastructure shared by stadtwacht's test packages (real brokers and receivers on 127.0.0.1)."""
