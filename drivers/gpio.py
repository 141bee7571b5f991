"""GPIO feedback: green and red LEDs, a buzzer, an optional door relay and an optional admin button.

gpiozero devices over a pin factory chosen by configuration ([gpio] pin_factory): RPi.GPIO on a Pi up to 4,
lgpio on a Pi 5, gpiozero's own MockFactory in tests and the demo ("mock"), or gpiozero's default ("auto").
Patterns run in gpiozero's background threads, so calling them never blocks the punch flow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from gpiozero import LED, Button, Buzzer, DigitalOutputDevice

# name → (module, class); imported only when chosen, so this module imports cleanly on a laptop.
PIN_FACTORIES = {
    "mock": ("gpiozero.pins.mock", "MockFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
}


class GpioError(Exception):
    """The pin factory or a pin could not be set up; the message says what to install or change."""


def make_pin_factory(name: str):
    """A gpiozero pin factory by name; None for "auto" (gpiozero picks the first that works)."""
    if name == "auto":
        return None
    if name not in PIN_FACTORIES:
        raise GpioError(f"unknown [gpio] pin_factory {name!r}; use auto, {', '.join(PIN_FACTORIES)}")
    module_name, class_name = PIN_FACTORIES[name]
    try:
        module = __import__(module_name, fromlist=[class_name])
        return getattr(module, class_name)()
    except Exception as e:  # ImportError off a Pi, RuntimeError without /dev/gpiomem, ...
        raise GpioError(f"pin factory {name!r} is not usable here ({type(e).__name__}: {e}); on a Pi install "
                        "presensi-edge[pi] (RPi.GPIO; lgpio on a Pi 5), elsewhere use pin_factory = \"mock\"") from e


class Feedback:
    """success(): green + one beep (+ door relay); failure(): red flashes + two beeps; set_fault(True): red
    blinks slowly until cleared. Pins are BCM numbers; None leaves a device out."""

    def __init__(self, *, green_led: int | None = 17, red_led: int | None = 27, buzzer: int | None = 22,
                 door_relay: int | None = None, admin_button: int | None = None, pin_factory=None,
                 on_button: Callable[[], None] | None = None, door_seconds: float = 3.0):
        kw = {"pin_factory": pin_factory}
        try:
            self.green = LED(green_led, **kw) if green_led is not None else None
            self.red = LED(red_led, **kw) if red_led is not None else None
            self.buzzer = Buzzer(buzzer, **kw) if buzzer is not None else None
            self.relay = DigitalOutputDevice(door_relay, **kw) if door_relay is not None else None
            self.button = Button(admin_button, **kw) if admin_button is not None else None
        except Exception as e:
            self.close()
            raise GpioError(f"GPIO setup failed: {e}; check the [gpio] pin numbers") from e
        if self.button is not None and on_button is not None:
            self.button.when_pressed = on_button
        self.door_seconds = door_seconds
        self._fault = False
        self._resume: threading.Timer | None = None

    @classmethod
    def from_settings(cls, gpio_cfg, on_button: Callable[[], None] | None = None) -> Feedback:
        """From the [gpio] section (any object with its attribute names)."""
        return cls(green_led=gpio_cfg.green_led, red_led=gpio_cfg.red_led, buzzer=gpio_cfg.buzzer,
                   door_relay=gpio_cfg.door_relay, admin_button=gpio_cfg.admin_button,
                   pin_factory=make_pin_factory(gpio_cfg.pin_factory), on_button=on_button)

    def success(self) -> None:
        if self.green:
            self.green.blink(on_time=1.5, off_time=0, n=1)
        if self.buzzer:
            self.buzzer.beep(on_time=0.1, off_time=0, n=1)
        if self.relay:
            self.relay.blink(on_time=self.door_seconds, off_time=0, n=1)

    def failure(self) -> None:
        if self.red:
            self.red.blink(on_time=0.15, off_time=0.15, n=3)
            self._resume_fault_after(0.9)
        if self.buzzer:
            self.buzzer.beep(on_time=0.1, off_time=0.1, n=2)

    def set_fault(self, on: bool) -> None:
        """A part is broken: the red LED blinks slowly while it lasts."""
        self._fault = on
        if self.red is None:
            return
        if on:
            self.red.blink(on_time=0.2, off_time=1.8)
        else:
            self.red.off()

    def _resume_fault_after(self, seconds: float) -> None:
        if self._resume:
            self._resume.cancel()
        self._resume = threading.Timer(seconds, lambda: self._fault and self.set_fault(True))
        self._resume.daemon = True
        self._resume.start()

    def close(self) -> None:
        if getattr(self, "_resume", None):
            self._resume.cancel()
        for name in ("green", "red", "buzzer", "relay", "button"):
            device = getattr(self, name, None)
            if device is not None:
                device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PressButton:
    """One push button (gpiozero Button, pull-up, pressed = pin to ground) calling `on_press` per press;
    the work-code button of the fingerprint path is one ([work_codes] button_pin)."""

    def __init__(self, pin: int, on_press: Callable[[], None], *, pin_factory=None, bounce_time: float | None = 0.05):
        try:
            self.button = Button(pin, pin_factory=pin_factory, bounce_time=bounce_time)
        except Exception as e:
            raise GpioError(f"GPIO setup of the button on BCM {pin} failed: {e}; check [work_codes] button_pin") from e
        self.button.when_pressed = lambda: on_press()

    @classmethod
    def from_settings(cls, pin: int, gpio_cfg, on_press: Callable[[], None]) -> PressButton:
        return cls(pin, on_press, pin_factory=make_pin_factory(gpio_cfg.pin_factory))

    def close(self) -> None:
        self.button.close()
