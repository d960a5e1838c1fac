"""fastcnn's benchmark suite: ``python benchmarks/run.py`` (see ``benchmarks/README.md``).

It lives in the repository, not in the installed package, and uses fastcnn the way a
user does. Its modules, by job: ``harness`` (timing in alternating rounds, checks,
threads, the machine), ``cases`` (conv2d and pooling), ``loops`` (the textbook-loops
implementations), ``lenet`` (the LeNet-5 step, inference and epoch), ``fresh``
(measurements in fresh interpreters: memory, import time), ``targets`` (scores the
targets of ``targets.json``), ``report`` (tables, markdown, JSON), ``plot`` (the chart)
and ``run`` (the command line).
"""
