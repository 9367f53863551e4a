"""The SNGAN-64 training step as our users write it today, in plain PyTorch: the
reference that bench_train_step.py times ours against.

Their models are the DCGAN generator and discriminator (Radford et al.) with
torch.nn.utils.spectral_norm (the hook-based API) on every discriminator conv, a Sigmoid
output with nn.BCELoss, Adam, and a step of three discriminator forwards: real, fake
(detached) for the D update, fake again for the G update.
"""

import torch
from torch import nn


def users_generator(latent=100, width=64, channels=3) -> nn.Module:
    layers = [nn.ConvTranspose2d(latent, width * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(width * 8), nn.ReLU(True)]
    for k in (8, 4, 2):
        layers += [nn.ConvTranspose2d(width * k, width * k // 2, 4, 2, 1, bias=False),
                   nn.BatchNorm2d(width * k // 2), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def users_sn_discriminator(width=64, channels=3) -> nn.Module:
    sn = nn.utils.spectral_norm
    layers = [sn(nn.Conv2d(channels, width, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True)]
    for k in (1, 2, 4):
        layers += [sn(nn.Conv2d(width * k, width * 2 * k, 4, 2, 1, bias=False)), nn.BatchNorm2d(width * 2 * k),
                   nn.LeakyReLU(0.2, inplace=True)]
    layers += [sn(nn.Conv2d(width * 8, 1, 4, 1, 0, bias=False)), nn.Sigmoid()]
    return nn.Sequential(*layers)


class UsersStep:
    """One iteration of their loop: update D on real and fake, then G."""

    def __init__(self, device, latent=100, lr=2e-4, beta=0.5):
        self.generator = users_generator(latent).to(device)
        self.discriminator = users_sn_discriminator().to(device)
        self.criterion = nn.BCELoss()
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(beta, 0.999))
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(beta, 0.999))
        self.latent = latent

    def __call__(self, real: torch.Tensor) -> None:
        batch = real.size(0)
        self.discriminator.zero_grad()
        label = torch.full((batch,), 1.0, device=real.device)
        error_real = self.criterion(self.discriminator(real).view(-1), label)
        error_real.backward()
        fake = self.generator(torch.randn(batch, self.latent, 1, 1, device=real.device))
        label.fill_(0.0)
        error_fake = self.criterion(self.discriminator(fake.detach()).view(-1), label)
        error_fake.backward()
        self.optimizer_d.step()
        self.generator.zero_grad()
        label.fill_(1.0)
        error_g = self.criterion(self.discriminator(fake).view(-1), label)
        error_g.backward()
        self.optimizer_g.step()
