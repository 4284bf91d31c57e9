"""mit_semseg: semantic segmentation and scene parsing on ADE20K."""

__version__ = "2.0.0"


def __getattr__(name: str):
    if name == "Segmenter":  # imported on first use: `import mit_semseg` stays light
        from .segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'mit_semseg' has no attribute '{name}'")
