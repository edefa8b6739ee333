"""Embedded synthetic multi-modal ReID data: RGBNT201-like persons and MSVR310-like vehicles with ground truth.

Every identity has latent attributes from the NEXT templates that are drawn as visible shapes; every image has a
camera with its own background, a view, day or night, illumination, blur and occluders; RGB, NIR and thermal are
rendered from per-material physics (colour, NIR reflectance, temperature), not copied from one another.
``generate_dataset`` writes the layout that ``reidprep index`` reads plus masks and attributes to check against.
"""

from reidprep.synth.writer import GENERATOR_VERSION, SynthSummary, generate_dataset

__all__ = ["GENERATOR_VERSION", "SynthSummary", "generate_dataset"]
