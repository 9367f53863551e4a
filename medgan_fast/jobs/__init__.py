"""Jobs: what a command does, as a library call. Each loads its inputs (sets, checkpoints),
calls training, models and metrics, and writes its outputs; the command line
(medgan_fast/<command>.py) only parses arguments into the job's config.

Modules: generation (generate: images from a generator checkpoint), evaluation (evaluate:
generated images against real ones).
"""
