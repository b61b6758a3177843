"""The replication experiments: everything that trains, compares and reports.

* :mod:`.config`: what a run is (:class:`~.config.TrainConfig`, methods, scopes, the schedule);
* :mod:`.models`: the model family; :mod:`.train`: the trainer, whose probes (shift, drift,
  inference policies) are :mod:`.probes` and whose record is :mod:`.records`;
  :mod:`.packed`: the seeds of a configuration trained together (their SGD: :mod:`.packed_sgd`);
* :mod:`.sweep`: profiles, resumable result files, parallel execution; :mod:`.readings`: the
  readings of the paper as configurations;
* :mod:`.metrics` (per run) and :mod:`.stats` (paired comparisons across seeds);
  :mod:`.tables`, :mod:`.report` and :mod:`.plots`: what the analysis writes;
* :mod:`.pipelines` and :mod:`.studies`: what the notebooks call; :mod:`.notebooks`: an executed
  notebook made stable for committing (no run times, progress bars or machine paths).

The trainer (config, models, train, probes, records, metrics, packed, packed_sgd, sweep) needs only the core
dependencies; statistics, tables, figures and the notebooks need the ``[experiments]`` extra.
"""
