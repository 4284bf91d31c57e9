"""Every configuration key with its default; `config/*.yaml` and the command line override them."""

from yacs.config import CfgNode as CN

_C = CN()
_C.DIR = "ckpt/ade20k-resnet50dilated-ppm_deepsup"

# -----------------------------------------------------------------------------
# Dataset
# -----------------------------------------------------------------------------
_C.DATASET = CN()
_C.DATASET.root_dataset = "./data/"
_C.DATASET.list_train = "./data/training.odgt"
_C.DATASET.list_val = "./data/validation.odgt"
_C.DATASET.num_class = 150
# multi-scale training and testing: short sides of the image
_C.DATASET.imgSizes = (300, 375, 450, 525, 600)
# largest long side of an input image
_C.DATASET.imgMaxSize = 1000
# inputs are padded to a multiple of this (the network's largest downsampling rate)
_C.DATASET.padding_constant = 8
# downsampling rate of the training labels (the decoder's output stride)
_C.DATASET.segm_downsampling_rate = 8
# randomly flip training images horizontally
_C.DATASET.random_flip = True
# class names: a CSV with columns Idx and Name (and optionally R, G, B colours), or a table shipped by name
# (cityscapes, voc: what their preparations write); "": the ADE20K names when num_class is 150
_C.DATASET.class_info = ""
# check that every file of the record lists exists before starting (turn off for huge lists)
_C.DATASET.check_files = True
# how training images are sampled: "aspect" (the original's: batches of one orientation, each at a short side
# drawn from imgSizes, padded to the largest) or "crop" (mmsegmentation's: each image rescaled to crop_scale
# times a ratio drawn from crop_ratio_range, cropped to crop_size, flipped, colour-jittered)
_C.DATASET.pipeline = "aspect"
# crop pipeline: the rescale's (long side, short side) limits before the ratio, as mmsegmentation's `scale`
_C.DATASET.crop_scale = (2048, 512)
# crop pipeline: the range of the random rescale ratio
_C.DATASET.crop_ratio_range = (0.5, 2.0)
# crop pipeline: (height, width) of the crops; smaller images are padded, label padding unlabelled
_C.DATASET.crop_size = (512, 512)
# crop pipeline: a crop is drawn again (up to 10 times) while one class covers this share of its labelled pixels
_C.DATASET.cat_max_ratio = 0.75
# crop pipeline: random brightness, contrast, saturation and hue (mmsegmentation's PhotoMetricDistortion)
_C.DATASET.photometric = True
# Unified Perceptual Parsing (MODEL.arch_decoder upp or upp_lite): the folder of the label tables object.csv,
# part.csv, scene.csv, material.csv and object_part_hierarchy.csv ("": the Broden+ tables shipped with the package)
_C.DATASET.label_tables = ""
# Unified Perceptual Parsing's texture stage (train.py --stage texture): record lists of images of one texture each
# (`fpath_img`, `texture`: a label of the tables' texture.csv), to train and to evaluate the texture head
_C.DATASET.list_texture_train = ""
_C.DATASET.list_texture_val = ""

# -----------------------------------------------------------------------------
# Model
# -----------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.arch_encoder = "resnet50dilated"
_C.MODEL.arch_decoder = "ppm_deepsup"
_C.MODEL.weights_encoder = ""
_C.MODEL.weights_decoder = ""
# fine-tuning: start from another model's weights as far as they fit, the classifiers fresh for this config's
# classes (train.py --init-from): a released model's name, a checkpoint folder, FOLDER/epoch_N or ENC.pth,DEC.pth
_C.MODEL.init_from = ""
# dropout before the decoder's classifier (UPerNet; the original's 0; mmsegmentation's recipes 0.1)
_C.MODEL.decoder_dropout = 0.0
# the decoder's bilinear resizes, and with TEST.pipeline mmseg the resizes of its logits, with align_corners
# (mmsegmentation's 769x769 Cityscapes models; False elsewhere, as the original)
_C.MODEL.align_corners = False
# stochastic depth of an encoder that has it (ConvNeXt): the rate grows linearly over its blocks up to this
_C.MODEL.drop_path_rate = 0.0
# an auxiliary head for training, "" or "fcn": a 3x3 conv-BN-ReLU to 256 channels, dropout 0.1 and a classifier on
# the encoder's second-to-last map (mmsegmentation's FCNHead), its loss weighted by TRAIN.aux_loss_weight; it is
# left out of the epoch checkpoints (inference does not use it) and kept in the resume states
_C.MODEL.aux_head = ""
# channels of the encoder's last feature map
_C.MODEL.fc_dim = 2048
# start the encoder from ImageNet weights when weights_encoder is empty
_C.MODEL.pretrained = True
# what the network's input is: imagenet (RGB, ImageNet mean and std; the segmentation models) or caffe
# (BGR, 0..255 minus the caffe mean, std 1; the released Unified Perceptual Parsing model)
_C.MODEL.input_normalisation = "imagenet"
# batch-norm running-average momentum (the original's 0.001; HRNet's encoder keeps 0.1; use 0.1 from scratch)
_C.MODEL.bn_momentum = 0.001

# -----------------------------------------------------------------------------
# Training
# -----------------------------------------------------------------------------
_C.TRAIN = CN()
_C.TRAIN.batch_size_per_gpu = 2
_C.TRAIN.num_epoch = 20
_C.TRAIN.start_epoch = 0
_C.TRAIN.epoch_iters = 5000
# SGD (the original's; TRAIN.beta1 its momentum) or AdamW (TRAIN.betas), as mmsegmentation trains ConvNeXt and Swin
_C.TRAIN.optim = "SGD"
_C.TRAIN.betas = (0.9, 0.999)
# words of the parameter names that take no weight decay ("ndim1": every 1-D parameter, as mmsegmentation's layer
# decay rule; "norm", "bias_table": its Swin configs'); empty: the original's rule, only conv and linear weights decay
_C.TRAIN.no_decay = ()
# mmsegmentation's stage-wise learning-rate decay of the encoder (ConvNeXt): stage i's rate times
# lr_decay_rate ** (lr_decay_layers + 1 - (i + 1)), the stem's the smallest; 0: off
_C.TRAIN.lr_decay_rate = 0.0
_C.TRAIN.lr_decay_layers = 0
# a linear warm-up of this many iterations (from warmup_ratio times the rate) before the poly schedule, which then
# runs over the iterations after it (mmsegmentation's LinearLR then PolyLR); 0: none
_C.TRAIN.warmup_iters = 0
_C.TRAIN.warmup_ratio = 1e-6
_C.TRAIN.lr_encoder = 0.02
_C.TRAIN.lr_decoder = 0.02
# power of the poly learning-rate schedule
_C.TRAIN.lr_pow = 0.9
# the poly schedule's floor: lr = (base - lr_min) * (1 - it / max_it) ** lr_pow + lr_min (mmsegmentation's eta_min)
_C.TRAIN.lr_min = 0.0
# momentum of SGD
_C.TRAIN.beta1 = 0.9
_C.TRAIN.weight_decay = 1e-4
# weight of MODEL.aux_head's loss
_C.TRAIN.aux_loss_weight = 0.4
# weight of the deep-supervision loss
_C.TRAIN.deep_sup_scale = 0.4
# Unified Perceptual Parsing: weights of the heads' losses in the total
_C.TRAIN.loss_weight_object = 1.0
_C.TRAIN.loss_weight_part = 0.5
_C.TRAIN.loss_weight_scene = 0.25
_C.TRAIN.loss_weight_material = 1.0
# what train.py trains: "" (the config's model) or "texture" (--stage texture: a texture head on a trained Unified
# Perceptual Parsing model, everything else frozen; its files in DIR start with texture_)
_C.TRAIN.stage = ""
# texture stage: the trained model to start from: "" (the last epoch in DIR), a released model's name, a checkpoint
# folder (its last epoch), FOLDER/epoch_N or ENCODER.pth,DECODER.pth; the head is saved as DIR/texture_<epoch_N.pth>
_C.TRAIN.texture_from = ""
# texture stage: the short side images are resized to (the paper's 64); training takes squares of this side
_C.TRAIN.texture_size = 64
_C.TRAIN.texture_num_epoch = 5
_C.TRAIN.texture_epoch_iters = 500
_C.TRAIN.texture_batch_size_per_gpu = 16
# texture stage: the head's base learning rate (poly schedule, as the rest)
_C.TRAIN.texture_lr = 0.02
# freeze batch-norm statistics and parameters (fine-tuning)
_C.TRAIN.fix_bn = False
_C.TRAIN.workers = 16
_C.TRAIN.disp_iter = 20
_C.TRAIN.seed = 304
# validate while training: every N epochs, the epoch's checkpoint evaluated as eval_multipro.py does (VAL.*,
# TEST.*), on the devices training uses; its figures go to history.json, the plot, TensorBoard and the log. 0: off
_C.TRAIN.eval_period = 0
# with eval_period: the figure whose best epoch is kept as DIR/encoder_best.pth, decoder_best.pth (best.json says
# which epoch and what figure); a name of the evaluation's summary (mean_iou, pixel_accuracy; a UPP model's
# object/mean_iou, scene/accuracy ...; a name alone matches the first head's). Higher is better, but for a loss or error
_C.TRAIN.best_metric = "mean_iou"
# keep the checkpoints of the last N epochs only (0: all); the best checkpoint is kept whatever its epoch
_C.TRAIN.keep_last = 0
# gradient accumulation: K forward-backward passes (of TRAIN.batch_size_per_gpu on each device) per optimisation
# step, each pass's loss divided by K: one step of K x the batch, in the memory of one. An iteration (epoch_iters,
# the learning-rate schedule, disp_iter) is one optimisation step
_C.TRAIN.accum_steps = 1
# losses for imbalanced classes (segmentation decoders; the defaults give the original's NLL loss). class_weights:
# "" (none), a file of one weight per class in class order (numbers separated by spaces, commas or lines; a JSON
# list; or DIR/class_weights.json of another run), or median_frequency: median(f) / f_c, f_c = the pixels of class c
# over the labelled pixels of the training images holding c (Eigen & Fergus), counted once from DATASET.list_train's
# labels and cached in DIR/class_weights.json. They weigh every head's loss (the main head's, deep supervision's,
# MODEL.aux_head's): the weighted mean over the labelled pixels, as torch's
_C.TRAIN.class_weights = ""
# mmsegmentation's OHEM pixel sampling (OHEMPixelSampler) on the main head's loss: of the labelled pixels, those whose
# true class has a probability below max(ohem_threshold, that of the (ohem_min_kept x batch)-th least sure pixel); with
# ohem_threshold 0, the ohem_min_kept x batch pixels of highest loss. The kept pixels' losses are summed and divided
# by the label map's size (a labelled pixel counted at its class weight), as mmsegmentation's loss does.
# ohem_min_kept 0: off (its Cityscapes configs: 0.7, 100000)
_C.TRAIN.ohem_threshold = 0.0
_C.TRAIN.ohem_min_kept = 0
# a term added to the main head's loss, times extra_loss_weight: "" (none) or lovasz (Lovász-softmax, Berman et al.
# 2018: over the batch's labelled pixels, the mean over the classes present in the labels)
_C.TRAIN.extra_loss = ""
_C.TRAIN.extra_loss_weight = 1.0
# mixed precision: none, bf16 (CPU and GPU), fp16 (GPU, with gradient scaling) or auto (bf16 where the
# device runs it natively: GPUs of compute capability >= 8.0, CPUs with avx512_bf16 or AMX; else none)
_C.TRAIN.amp = "none"
# channels-last memory format for the model and its inputs
_C.TRAIN.channels_last = False
# let cuDNN pick the fastest convolution algorithms
_C.TRAIN.cudnn_benchmark = True
# compile the model with torch.compile
_C.TRAIN.compile = False

# -----------------------------------------------------------------------------
# Validation
# -----------------------------------------------------------------------------
_C.VAL = CN()
_C.VAL.batch_size = 1
# write image | ground truth | prediction pictures
_C.VAL.visualize = False
_C.VAL.checkpoint = "epoch_20.pth"
# fp32 (the original's numbers), bf16, or auto (bf16 where the device runs it natively)
_C.VAL.precision = "fp32"
# the classes mean IoU averages: all (the original's: a class absent from the labels and the predictions counts 0)
# or present (mmsegmentation's: only the classes in the labels or the predictions)
_C.VAL.mean_iou_over = "all"
# evaluate the first N validation records only (0: all): a quicker validation while training
_C.VAL.max_images = 0

# -----------------------------------------------------------------------------
# Testing
# -----------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.batch_size = 1
_C.TEST.checkpoint = "epoch_20.pth"
_C.TEST.result = "./"
# auto (bf16 where the device runs it natively, else fp32), fp32 or bf16
_C.TEST.precision = "auto"
# how evaluation and test.py predict an image: whole (the image at every test scale, see TEST.ratios) or slide
# (overlapping TEST.crop_size windows of the image at its own size, or at every scale of TEST.ratios)
_C.TEST.mode = "whole"
# original (the original's resizing and fusion) or mmseg (mmsegmentation's test pipeline: its released models'
# figures); see mit_semseg/data/transforms.py TEST_PIPELINES
_C.TEST.pipeline = "original"
# crop side and stride of the slide mode (multiples of DATASET.padding_constant)
_C.TEST.crop_size = 512
_C.TEST.stride = 384
# multi-scale as mmsegmentation's recipes: the image at DATASET.imgSizes[0] (short side) and imgMaxSize (long side)
# times each ratio, e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75); () keeps the original's scales, every imgSizes entry
_C.TEST.ratios = ()
# also predict the mirrored image and average it in (evaluation and test.py; VAL.flip in older configs)
_C.TEST.flip = False
