"""Dataset preparation tools: download and convert ADE20K, Cityscapes, Pascal VOC (+ SBD) and Broden+ into the layouts
the training pipeline (`mit_semseg.data`) reads. Nothing at run time imports them."""
