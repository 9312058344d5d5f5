"""Translation engines: the contract, the registry, shared session machinery."""
