"""`nodepool-builder`: diskimage builds, uploads to every provider, rotation and cleanup."""
