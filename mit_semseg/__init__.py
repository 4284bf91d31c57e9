"""mit_semseg: semantic segmentation and scene parsing on ADE20K."""
__version__ = "2.0.0"
