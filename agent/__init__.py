"""dicom-agent: an embeddable DICOM agent for the host of an imaging device."""

__version__ = "0.1.0"

#: Our Implementation Class UID (PS3.7 D.3.3.2): a 2.25 UUID-derived UID, fixed for the product.
IMPLEMENTATION_CLASS_UID = "2.25.208585000671788002891927239280593043449"
#: Implementation Version Name: at most 16 characters (PS3.8 D.3.3.2.2).
IMPLEMENTATION_VERSION_NAME = ("DICOMAGENT_" + __version__)[:16]
