"""De-identification of DICOM objects (PS3.15 Annex E): header attributes and burned-in pixel text."""
