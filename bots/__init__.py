"""Platform adapters (Discord, Slack, web) and the ``llmconnect`` command line."""
