"""presensi-edge: the software inside on-premises attendance terminals."""

from setuptools import find_namespace_packages, setup

setup(
    name="presensi-edge",
    version="0.1.0",
    description="Attendance terminal daemon: face, fingerprint and PIN punches kept in a "
    "hash-chained SQLite log and delivered to a central server",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # namespace packages too, so that the data folders (web/static, pages/templates, ...) are packages of
    # their own and setuptools ships them without warning that they look importable
    packages=find_namespace_packages(include=["terminal*", "drivers*", "sync*"], exclude=["*__pycache__"]),
    include_package_data=True,
    package_data={"terminal": ["web/static/*", "web/templates/*"],
                  "sync": ["server/pages/static/*", "server/pages/templates/*"]},
    install_requires=[
        "sqlite-utils==4.2.1",
        "cryptography==46.0.3",
        "requests==2.32.5",
        "pyserial==3.5",
        "pyfingerprint==1.5",
        "opencv-python-headless==4.12.0.88",
        "dlib-bin==20.0.1.post1",
        "face-recognition-models==0.3.0",
        "numpy>=1.26,<3",
        "gpiozero==2.0.1.post3",
        # The three HTTP servers (kiosk/admin with the pull API, the reference central server): FastAPI on
        # uvicorn with its pure-Python h11 protocol (docs/http-servers.md). pydantic comes with FastAPI.
        "fastapi==0.165.0",
        "uvicorn==0.54.0",
        "pydantic==2.14.4",  # terminal/config/: the configuration models (pydantic-core has aarch64 wheels)
        "Jinja2==3.1.6",  # the central server's pages (sync/server/pages/): templates with autoescape
        # the central server's monthly recap as XLSX for BKPSDM (sync/server/recapexport.py); pure Python
        "openpyxl==3.1.5",
    ],
    extras_require={
        # Raspberry Pi only: the GPIO backends gpiozero uses on real hardware.
        "pi": ["RPi.GPIO==0.7.1", "lgpio==0.2.2.0"],
        # bench/face_eval.py and bench/face_speed.py compare with the face_recognition package. Its pin on
        # dlib would build dlib from source, so install it separately after this extra (dlib-bin provides
        # the dlib module): pip install -e .[bench] && pip install --no-deps face_recognition==1.3.0
        "bench": ["Click==8.5.1", "Pillow==13.0.0"],
        # `presensi demo` takes its sample face from scikit-image's bundled public-domain portrait
        # (astronaut Eileen Collins, NASA) when ../shared is not beside the repository.
        "demo": ["scikit-image==0.26.0"],
        # The reference central server on PostgreSQL (`presensi server run --db postgresql://…`).
        "server": ["psycopg[binary]==3.3.9"],
        "dev": [
            "pytest==9.2.0",
            "pytest-timeout==2.4.0",  # the per-test timeout of pytest.ini: a hung test fails, the run goes on
            "pytest-xdist==3.8.0",  # scripts/test.sh runs the test files on two workers (CI: 2 cores, 30 min)
            "scikit-image==0.26.0",  # the demo's sample face, used by tests/test_daemon.py
            "websocket-client==1.9.2",  # tests/browser_support.py drives headless Chromium (DevTools protocol)
            "psycopg[binary]==3.3.9",  # tests/test_sync_server.py runs the central server on PostgreSQL too
            "ruff==0.17.5",
            "import-linter==2.17",  # the import rules of DESIGN.md (.importlinter), run by scripts/test.sh
            # ZKTeco peers the ZK/ADMS tests run unmodified (tests/test_zk.py, tests/test_adms.py)
            "pyzk==0.9",
            "django-fingerprint-attendance==0.1.0",
            "waitress==3.0.2",  # serves the Django ADMS peer in tests/test_adms.py (a WSGI app)
            "Django==5.2.19",
            "djangorestframework==3.18.3",
            "schemathesis==4.32.5",
        ],
    },
    entry_points={"console_scripts": ["presensi=terminal.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
    ],
)
