"""FHIR R4 input: map a patient's record (Bundle entries) to an anonymised case.

`fhir_to_case` is the one pure entry point the CLI (`screen --fhir`) and a CDS Hooks service call.
"""

from engine.fhir.mapper import (
    MAX_FHIR_BYTES,
    FhirInputError,
    Mapped,
    Source,
    fhir_to_case,
    read_bundle,
)

__all__ = ["MAX_FHIR_BYTES", "FhirInputError", "Mapped", "Source", "fhir_to_case", "read_bundle"]
