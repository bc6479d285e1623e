"""A load generator that acts only as CI masters do (kazoo, PROTOCOL.md) and measures a launcher."""
