"""Provider adapters of the notifications domain: the only modules that see an SDK exception."""
