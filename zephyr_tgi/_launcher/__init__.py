"""The launcher: container lifecycle, engine arguments, readiness and the GPTQ variant table."""
