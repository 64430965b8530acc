"""Built-in scheduling (issue 17 item 1, docs/scheduling.md): a clinic's resources and slot
rules (:mod:`scheduling.resources`), the patients' preferences (:mod:`scheduling.preferences`),
the pure slot search (:mod:`scheduling.search`) and the PostgreSQL side: resources, reservations
under an exclusion constraint, free times (:mod:`scheduling.store`).

Nothing here runs in workflow code: the journey reaches it through the ``reserve_slot`` and
``release_slot`` activities (``activities/store.py``) with the models of ``workflows/booking.py``.
"""
