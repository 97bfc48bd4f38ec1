"""BERT-Attack through TextAttack, offline: the adversarial-vulnerability check's machinery.

Importing this package does not import TextAttack; :mod:`.recipe` and :mod:`.wrapper` do,
through :func:`.offline.import_textattack` (which needs the ``attack`` extra).
"""
