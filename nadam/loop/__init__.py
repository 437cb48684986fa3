"""The loop core of :func:`nadam.minimize`: status and messages (:mod:`.status`), the
stopping rules (:mod:`.tracker`), the run's state (:mod:`.state`), the objective's
evaluation (:mod:`.objective`), the one iteration order (:mod:`.iteration`) and the
three ways to run it: Python (:mod:`.iteration`), compiled (:mod:`.compiled`) and on a
CUDA device (:mod:`.device`), driven in chunks by :mod:`.runner`.

``docs/architecture.md`` draws the layers and the data path of one step.
"""
