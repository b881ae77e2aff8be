"""Campaign preflight (lint), simulation and post-campaign review."""
