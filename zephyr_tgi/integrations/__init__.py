"""Integrations with other libraries, each an optional extra: `zephyr_tgi.integrations.langchain` (`[langchain]`)."""
