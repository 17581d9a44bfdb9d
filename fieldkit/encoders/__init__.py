"""Input encoders for neural fields: multiresolution hash grid and spherical harmonics."""
from fieldkit.encoders.hashgrid import HashGrid, HashGridConfig
from fieldkit.encoders.sh import sh_encode

__all__ = ["HashGrid", "HashGridConfig", "sh_encode"]
