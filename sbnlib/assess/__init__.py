"""Assess your own data: would selective BN normalise your batches, and what does the evidence say?

* reading your data, in bounded memory: :mod:`.sources` (the base and its errors), :mod:`.images`,
  :mod:`.arrays`, :mod:`.csvfile` (the readers), :mod:`.readers` (:func:`open_source`) and
  :mod:`.streaming` (two passes: statistics, then standardised items);
* the assessment: :mod:`.core` (:func:`assess_data`, :func:`assess`: scores, threshold, the
  fraction of batches that need BN);
* the evidence, as data: :mod:`.evidence` (``evidence.json`` and ``status.json``, written by the
  analysis, read here); :mod:`.advice` (the recommendation), :mod:`.figures` and :mod:`.html`
  (the report).
"""
from .core import DEFAULT_BATCH_SIZES, assess, assess_data, domain_auroc, domain_auroc_table, plan_ordering_table, summary_table

__all__ = ["assess_data", "assess", "summary_table", "domain_auroc", "domain_auroc_table", "plan_ordering_table",
           "DEFAULT_BATCH_SIZES"]
