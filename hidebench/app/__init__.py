"""The front end: command line, harness (run + score + record), reports. It may import every
layer; nothing imports it."""
