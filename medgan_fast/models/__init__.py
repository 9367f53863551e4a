"""Models: plain ``nn.Module`` s named after their papers; no training logic inside."""

from .dcgan import DCGANDiscriminator, DCGANGenerator, SNGANDiscriminator, dcgan_init

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "SNGANDiscriminator", "dcgan_init"]
