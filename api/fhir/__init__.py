"""FHIR R4 views of the journey (``/fhir/R4``): resources built from the read model, the event
log and the patients table with the ``fhir.resources`` R4B models (see docs/integrations.md)."""
