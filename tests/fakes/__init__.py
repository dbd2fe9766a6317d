"""Local fake servers that speak the providers' HTTP APIs, for the real SDKs to talk to."""
