"""``journey simulate``: a season of patients on the sandbox clock against the real stack
(docs/simulation.md).

* :mod:`worker.simulation.arrivals`: who arrives when (seeded patient profiles and dates);
* :mod:`worker.simulation.noise`: what goes wrong and how often (seeded, stated rates);
* :mod:`worker.simulation.integration`: the booking system, patient and clinician who act on
  the journeys from the read model (``worker.demo.DemoIntegration`` plus the noise);
* :mod:`worker.simulation.audit`: every clinical rule checked in SQL over the event log,
  appointments and slot reservations;
* :mod:`worker.simulation.report`: the Markdown report with its SVG charts;
* :mod:`worker.simulation.stack`: the stack to run on (started here, or one already running);
* :mod:`worker.simulation.runner`: the whole run, with its progress display.
"""
