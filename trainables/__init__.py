"""Training one model: the penalties, the models, the training loop and the Tune trainables (real and simulated)."""

from __future__ import annotations

import time as _time

LOADED_AT = _time.time()  # when this process loaded the package: a fresh trial actor's set-up begins here
