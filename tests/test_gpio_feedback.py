"""GPIO feedback on gpiozero's own MockFactory (the library's test double): the success, failure and fault
patterns drive the right pins, the admin button reaches its callback, and a pin factory that cannot work
here is refused with a message saying what to install."""

from __future__ import annotations

import importlib.util
import time

import pytest
from gpiozero.pins.mock import MockFactory

from drivers.gpio import Feedback, GpioError, make_pin_factory
from terminal.config import Gpio


@pytest.fixture
def factory():
    return MockFactory()


@pytest.fixture
def feedback(factory):
    with Feedback(green_led=17, red_led=27, buzzer=22, door_relay=23, admin_button=24, pin_factory=factory,
                  door_seconds=0.3) as fb:
        yield fb


def highs(pin) -> int:
    return sum(1 for s in pin.states if s.state)


def wait_until(predicate, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.01)
    return predicate()


def test_success_lights_green_beeps_once_and_opens_the_door(feedback, factory):
    feedback.success()
    green, red, buzzer, relay = (factory.pin(n) for n in (17, 27, 22, 23))
    assert wait_until(lambda: green.state and relay.state)
    assert wait_until(lambda: not buzzer.state and highs(buzzer) == 1)
    assert wait_until(lambda: not relay.state)  # the door closes again after door_seconds
    assert highs(red) == 0


def test_failure_flashes_red_three_times_and_beeps_twice(feedback, factory):
    feedback.failure()
    red, buzzer, green = factory.pin(27), factory.pin(22), factory.pin(17)
    assert wait_until(lambda: highs(red) == 3 and not red.state)
    assert wait_until(lambda: highs(buzzer) == 2 and not buzzer.state)
    assert highs(green) == 0


def test_fault_blinks_red_until_cleared_and_survives_a_failure_pattern(feedback, factory):
    red = factory.pin(27)
    feedback.set_fault(True)
    assert wait_until(lambda: red.state)
    feedback.failure()
    time.sleep(1.2)
    assert wait_until(lambda: red.state, timeout=2.5)  # the slow fault blink is back
    feedback.set_fault(False)
    assert wait_until(lambda: not red.state)
    settled = len(red.states)
    time.sleep(0.5)
    assert len(red.states) == settled


def test_admin_button_calls_back(factory):
    pressed = []
    with Feedback(admin_button=24, pin_factory=factory, on_button=lambda: pressed.append(1)):
        button = factory.pin(24)
        button.drive_low()  # pull-up: pressing connects the pin to ground
        assert wait_until(lambda: pressed == [1])


def test_from_settings_uses_the_configured_pin_factory():
    cfg = Gpio(pin_factory="mock", green_led=5, red_led=6, buzzer=None)
    with Feedback.from_settings(cfg) as fb:
        assert fb.buzzer is None and fb.relay is None
        assert type(fb.green.pin_factory).__name__ == "MockFactory"
        fb.success()


def test_unknown_and_unavailable_pin_factories_are_refused_with_advice():
    with pytest.raises(GpioError, match="unknown"):
        make_pin_factory("pigpio-typo")
    assert make_pin_factory("auto") is None
    if importlib.util.find_spec("RPi") is not None:
        pytest.skip("RPi.GPIO is installed here; its refusal needs a machine without it")
    with pytest.raises(GpioError, match=r"presensi-edge\[pi\]"):
        make_pin_factory("rpigpio")


def test_a_pin_used_twice_is_a_clear_setup_error(factory):
    with pytest.raises(GpioError, match="pin numbers"):
        Feedback(green_led=17, red_led=17, pin_factory=factory)
