"""What survives de-identification without being listed in Table E.1-1: our keep lists.

PS3.15 E.1.1 note 5 leaves open whether a de-identifier removes what is known to be
a risk or retains only what is known to be safe. dicomguard does the latter: a
standard attribute that is neither in Table E.1-1 nor in :data:`SAFE_KEYWORDS` is
removed (default deny), so a vendor's or a new edition's free-text attribute never
leaks just because nobody listed it.

:data:`SAFE_KEYWORDS` holds what images and reports need to stay usable: the SOP
Common, image pixel, plane, acquisition (CT, MR, US, PET/NM basics), VOI and modality
LUT, multi-frame and functional group, coded-entry and SR document-structure
attributes. None of them names a person, a place or a date; text attributes among
them are still scrubbed of the object's identifying values (:mod:`dicomguard.deid.scrub`).
Dates and times are never kept from here: every DA, DT and TM attribute follows the
date rules (PS3.15 Table E.1-1 note 4).

:data:`CLASS_UID_KEYWORDS` are the UI attributes whose value names a class, a transfer
syntax or a coding scheme, not an instance: they are never replaced (PS3.15 E.3.9
note 4: "one would never remove or replace the SOP Class UID").

:data:`SAFE_PRIVATE` is our short list of private attributes known to carry only
technique (PS3.15 E.3.10, chosen from the examples of Table E.3.10-1).
"""

from __future__ import annotations

from typing import Final

from pydicom.datadict import tag_for_keyword

SAFE_KEYWORDS: Final[frozenset[str]] = frozenset(
    {
        # SOP Common, General Series/Image identity that is not identifying (PS3.3 C.12.1, C.7.3.1, C.7.6.1)
        "SpecificCharacterSet", "SOPClassUID", "Modality", "SeriesNumber", "InstanceNumber", "AcquisitionNumber",
        "ImageType", "Laterality", "ImageLaterality", "PatientPosition", "PatientOrientation", "BodyPartExamined",
        "AnatomicalOrientationType", "QualityControlImage", "BurnedInAnnotation", "RecognizableVisualFeatures",
        "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod", "PresentationLUTShape",
        "ImagesInAcquisition", "PresentationIntentType", "ContentQualification", "Manufacturer",
        "ManufacturerModelName", "SoftwareVersions", "SeriesType", "Units", "CountsSource", "DecayCorrection",
        "CorrectedImage", "RandomsCorrectionMethod", "AttenuationCorrectionMethod", "ReconstructionMethod",
        "DecayFactor", "DoseCalibrationFactor", "ScatterFractionFactor", "DeadTimeFactor", "FrameReferenceTime",
        "ActualFrameDuration", "ImageIndex", "NumberOfSlices", "NumberOfTimeSlices", "SliceVector",
        # Image Plane and Image Pixel (PS3.3 C.7.6.2, C.7.6.3)
        "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices",
        "SliceLocation", "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
        "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio",
        "SmallestImagePixelValue", "LargestImagePixelValue", "SmallestPixelValueInSeries", "LargestPixelValueInSeries",
        "PixelPaddingValue", "PixelPaddingRangeLimit", "RedPaletteColorLookupTableDescriptor",
        "GreenPaletteColorLookupTableDescriptor", "BluePaletteColorLookupTableDescriptor",
        "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
        "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
        "SegmentedBluePaletteColorLookupTableData", "ICCProfile", "ColorSpace", "PixelData", "FloatPixelData",
        "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths", "ImagerPixelSpacing",
        "NominalScannedPixelSpacing", "PixelSpacingCalibrationType", "PixelIntensityRelationship",
        "PixelIntensityRelationshipSign",
        # Multi-frame and Cine (PS3.3 C.7.6.6, C.7.6.5)
        "NumberOfFrames", "FrameIncrementPointer", "StereoPairsPresent", "FrameTime", "FrameTimeVector", "StartTrim",
        "StopTrim", "RecommendedDisplayFrameRate", "CineRate", "FrameDelay", "PreferredPlaybackSequencing",
        "EffectiveDuration",
        # Modality LUT, VOI LUT, Presentation LUT (PS3.3 C.11)
        "RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth",
        "WindowCenterWidthExplanation", "VOILUTFunction", "VOILUTSequence", "ModalityLUTSequence", "ModalityLUTType",
        "LUTDescriptor", "LUTExplanation", "LUTData", "PresentationLUTSequence",
        # Contrast/Bolus except the agent text, which the table covers (PS3.3 C.7.6.4)
        "ContrastBolusRoute", "ContrastBolusVolume", "ContrastBolusTotalDose", "ContrastFlowRate",
        "ContrastFlowDuration", "ContrastBolusIngredient", "ContrastBolusIngredientConcentration",
        "ContrastBolusAgentSequence", "ContrastBolusAdministrationRouteSequence",
        # CT Image and CT acquisition (PS3.3 C.8.2.1, C.8.15)
        "KVP", "DataCollectionDiameter", "ReconstructionDiameter", "DistanceSourceToDetector",
        "DistanceSourceToPatient", "GantryDetectorTilt", "TableHeight", "RotationDirection", "ExposureTime",
        "XRayTubeCurrent", "Exposure", "ExposureInuAs", "FilterType", "GeneratorPower", "FocalSpots",
        "ConvolutionKernel", "RevolutionTime", "SingleCollimationWidth", "TotalCollimationWidth", "TableSpeed",
        "TableFeedPerRotation", "SpiralPitchFactor", "DataCollectionCenterPatient",
        "ReconstructionTargetCenterPatient", "ExposureModulationType", "CTDIvol", "CTDIPhantomTypeCodeSequence",
        "ScanOptions", "ReconstructionAlgorithm", "AcquisitionType", "TubeAngle", "WaterEquivalentDiameter",
        "EstimatedDoseSaving", "CTAcquisitionTypeSequence", "CTAcquisitionDetailsSequence",
        "CTTableDynamicsSequence", "CTPositionSequence", "CTGeometrySequence", "CTReconstructionSequence",
        "CTExposureSequence", "CTXRayDetailsSequence", "CTImageFrameTypeSequence",
        "ReconstructionFieldOfView", "ReconstructionPixelSpacing", "ReconstructionAngle",
        # MR Image (PS3.3 C.8.3.1)
        "ScanningSequence", "SequenceVariant", "MRAcquisitionType", "SequenceName", "AngioFlag", "RepetitionTime",
        "EchoTime", "InversionTime", "NumberOfAverages", "ImagingFrequency", "ImagedNucleus", "EchoNumbers",
        "MagneticFieldStrength", "NumberOfPhaseEncodingSteps", "EchoTrainLength", "PercentSampling",
        "PercentPhaseFieldOfView", "PixelBandwidth", "TriggerTime", "NominalInterval", "BeatRejectionFlag",
        "LowRRValue", "HighRRValue", "IntervalsAcquired", "IntervalsRejected", "HeartRate", "ReceiveCoilName",
        "TransmitCoilName", "AcquisitionMatrix", "InPlanePhaseEncodingDirection", "FlipAngle", "SAR", "dBdt",
        "VariableFlipAngleFlag", "B1rms", "DiffusionBValue", "DiffusionGradientOrientation", "DiffusionDirectionality",
        "MRDiffusionSequence", "MRImageFrameTypeSequence", "MRTimingAndRelatedParametersSequence",
        "MREchoSequence", "MRModifierSequence", "MRReceiveCoilSequence", "MRTransmitCoilSequence",
        "MRFOVGeometrySequence", "MRAveragesSequence", "MRImagingModifierSequence",
        # Ultrasound image and region calibration (PS3.3 C.8.5.5, C.8.5.6)
        "UltrasoundColorDataPresent", "SequenceOfUltrasoundRegions", "RegionSpatialFormat", "RegionDataType",
        "RegionFlags", "RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1",
        "ReferencePixelX0", "ReferencePixelY0", "PhysicalUnitsXDirection", "PhysicalUnitsYDirection",
        "ReferencePixelPhysicalValueX", "ReferencePixelPhysicalValueY", "PhysicalDeltaX", "PhysicalDeltaY",
        "TransducerFrequency", "TransducerType", "PulseRepetitionFrequency", "DopplerCorrectionAngle",
        "SteeringAngle", "DopplerSampleVolumeXPosition", "DopplerSampleVolumeYPosition", "TMLinePositionX0",
        "TMLinePositionY0", "TMLinePositionX1", "TMLinePositionY1", "PixelComponentOrganization",
        "PixelComponentMask", "PixelComponentRangeStart", "PixelComponentRangeStop",
        "PixelComponentPhysicalUnits", "PixelComponentDataType", "NumberOfTableBreakPoints",
        "TableOfXBreakPoints", "TableOfYBreakPoints", "NumberOfTableEntries", "TableOfPixelValues",
        "TableOfParameterValues", "MechanicalIndex", "BoneThermalIndex", "CranialThermalIndex",
        "SoftTissueThermalIndex", "SoftTissueFocusThermalIndex", "SoftTissueSurfaceThermalIndex", "DepthOfScanField",
        "StageName", "StageNumber", "NumberOfStages", "ViewName", "ViewNumber", "NumberOfViewsInStage",
        "NumberOfEventTimers", "EventTimerNames", "EventElapsedTimes", "ImageTransformationMatrix",
        "ImageTranslationVector", "StageCodeSequence", "ViewCodeSequence", "ViewModifierCodeSequence",
        "TransducerScanPatternCodeSequence", "TransducerGeometryCodeSequence", "TransducerBeamSteeringCodeSequence",
        "TransducerApplicationCodeSequence",
        # X-ray / DX geometry used to measure (PS3.3 C.8.7, C.8.11)
        "DistanceSourceToEntrance", "EstimatedRadiographicMagnificationFactor", "FieldOfViewShape",
        "FieldOfViewDimensions", "FieldOfViewOrigin", "FieldOfViewRotation", "FieldOfViewHorizontalFlip",
        "PositionerPrimaryAngle", "PositionerSecondaryAngle", "Grid", "ViewPosition", "DetectorType",
        "ImageAndFluoroscopyAreaDoseProduct", "BodyPartThickness", "CompressionForce", "EntranceDoseInmGy",
        "RelativeXRayExposure", "ExposureIndex", "TargetExposureIndex", "DeviationIndex", "Sensitivity",
        # Enhanced multi-frame functional groups and dimensions (PS3.3 C.7.6.16, C.7.6.17)
        "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "PixelMeasuresSequence",
        "PlanePositionSequence", "PlaneOrientationSequence", "FrameContentSequence", "FrameAcquisitionNumber",
        "StackID", "InStackPositionNumber", "TemporalPositionIndex", "DimensionIndexValues",
        "PixelValueTransformationSequence", "FrameVOILUTSequence", "FrameType", "FrameAnatomySequence",
        "FrameLaterality", "CardiacSynchronizationSequence", "RespiratorySynchronizationSequence",
        "DimensionOrganizationSequence", "DimensionIndexSequence", "DimensionIndexPointer", "FunctionalGroupPointer",
        "DimensionDescriptionLabel", "DimensionOrganizationType", "TemporalPositionSequence",
        "NominalCardiacTriggerDelayTime", "RealWorldValueMappingSequence", "RealWorldValueFirstValueMapped",
        "RealWorldValueLastValueMapped", "RealWorldValueIntercept", "RealWorldValueSlope",
        "RealWorldValueLUTData", "LUTLabel", "MeasurementUnitsCodeSequence", "QuantityDefinitionSequence",
        "DerivationImageSequence", "DerivationCodeSequence", "PurposeOfReferenceCodeSequence",
        "ReferencedFrameNumber", "ReferencedSegmentNumber", "SpatialLocationsPreserved", "PositionReferenceIndicator",
        # Coded entries (PS3.3 8.8) and anatomy
        "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue", "URNCodeValue",
        "ContextIdentifier", "ContextUID", "MappingResource", "MappingResourceUID", "MappingResourceName",
        "ContextGroupExtensionFlag", "EquivalentCodeSequence", "AnatomicRegionSequence",
        "AnatomicRegionModifierSequence", "PrimaryAnatomicStructureSequence",
        "PrimaryAnatomicStructureModifierSequence", "ProcedureCodeSequence", "PerformedProtocolCodeSequence",
        "ProtocolContextSequence", "ContentItemModifierSequence",
        # SR document structure and content items except person names and text (PS3.3 C.17)
        "ValueType", "ConceptNameCodeSequence", "ConceptCodeSequence", "ContinuityOfContent", "RelationshipType",
        "CompletionFlag", "VerificationFlag", "PreliminaryFlag", "ContentTemplateSequence", "TemplateIdentifier",
        "ReferencedSOPSequence", "ReferencedSOPClassUID", "MeasuredValueSequence", "NumericValue",
        "FloatingPointValue", "RationalNumeratorValue", "RationalDenominatorValue",
        "NumericValueQualifierCodeSequence", "GraphicType", "GraphicData", "ReferencedContentItemIdentifier",
        "TemporalRangeType", "ReferencedSamplePositions", "ReferencedTimeOffsets",
        "CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence", "ReferencedSeriesSequence",
        "IdenticalDocumentsSequence", "PredecessorDocumentsSequence", "PixelOriginInterpretation",
        "ReferencedWaveformChannels",
        # Presentation-state graphics that the Clean Graphics option keeps (PS3.3 C.10.5); text is scrubbed
        "GraphicLayer", "GraphicObjectSequence", "TextObjectSequence", "BoundingBoxTopLeftHandCorner",
        "BoundingBoxBottomRightHandCorner", "BoundingBoxAnnotationUnits", "BoundingBoxTextHorizontalJustification",
        "AnchorPoint", "AnchorPointAnnotationUnits", "AnchorPointVisibility", "GraphicAnnotationUnits",
        "GraphicDimensions", "NumberOfGraphicPoints", "GraphicFilled",
    }
)
"""Standard attributes outside Table E.1-1 that are kept (text values still scrubbed)."""

CLASS_UID_KEYWORDS: Final[frozenset[str]] = frozenset(
    {
        "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "ReferencedSOPClassUIDInFile",
        "TransferSyntaxUID", "ReferencedTransferSyntaxUIDInFile", "CodingSchemeUID", "ContextUID",
        "MappingResourceUID", "ImplementationClassUID", "PrivateInformationCreatorUID", "AffectedSOPClassUID",
        "RequestedSOPClassUID", "SOPClassesInStudy", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
        "EncryptedContentTransferSyntaxUID", "ReferencedRelatedGeneralSOPClassUIDInFile",
        "ContextGroupExtensionCreatorUID",
    }
)
"""UI attributes that name a class, transfer syntax or coding scheme: never replaced."""

SAFE_PRIVATE: Final[frozenset[tuple[str, int, int]]] = frozenset(
    {
        # (private creator, group, element offset in the block) -- examples of PS3.15 Table E.3.10-1.
        ("Philips PET Private Group", 0x7053, 0x00),  # SUV factor
        ("Philips PET Private Group", 0x7053, 0x09),  # activity concentration factor
        ("GEMS_ACQU_01", 0x0019, 0x23),  # table speed
        ("GEMS_ACQU_01", 0x0019, 0x24),  # mid scan time
        ("GEMS_ACQU_01", 0x0019, 0x27),  # rotation speed
        ("GEMS_PARM_01", 0x0043, 0x27),  # scan pitch ratio
        ("GEMS_PARM_01", 0x0043, 0x39),  # diffusion b value
        ("GEMS_SERS_01", 0x0025, 0x07),  # images in series
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # b value
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # diffusion directionality
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # diffusion gradient direction
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # b matrix
        ("Philips Imaging DD 001", 0x2001, 0x03),  # diffusion b-factor
        ("Philips Imaging DD 001", 0x2001, 0x04),  # diffusion direction
        ("ELSCINT1", 0x01F1, 0x26),  # pitch
        ("ELSCINT1", 0x01F1, 0x27),  # rotation time
    }
)
"""Private attributes kept by the Retain Safe Private option: (creator, group, element low byte)."""


def _tags(keywords: frozenset[str]) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            # A misspelt keyword would silently drop an attribute the images need: fail at import.
            raise ValueError(f"unknown DICOM keyword in a de-identification keep list: {keyword}")
        tags.add(tag)
    return frozenset(tags)


SAFE_TAGS: Final[frozenset[int]] = _tags(SAFE_KEYWORDS)
CLASS_UID_TAGS: Final[frozenset[int]] = _tags(CLASS_UID_KEYWORDS)
