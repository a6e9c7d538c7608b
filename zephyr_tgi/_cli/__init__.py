"""The `zephyr-tgi` command line."""
