"""One lock for torch.func's transforms.

torch.func's transforms (jacfwd, vmap) keep their state where two threads running them at once
corrupt it: four threads each calling ``fit(..., method="lm")`` aborted the process about one run in
eleven ("corrupted double-linked list"). Every call into a transform holds this lock, so the
library can be called from several threads (a web server, a notebook's background job); the rest
of a fit (residuals, the solves, autograd's own backward passes) runs in parallel. Re-entrant: a
transform may call another (vmap of jacfwd, a bounded model's Jacobian inside a Problem's).
"""

from __future__ import annotations

import threading

TRANSFORMS = threading.RLock()
