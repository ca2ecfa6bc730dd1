"""Everything that faces the network: servicers, the interceptors, wire conversion, admission and lookups.

Servicers translate messages and delegate to the runtime, nothing more."""
