from setuptools import find_packages, setup

setup(
    name="glancetx",
    version="0.1.0",
    description="The OpenStack Glance Images v1 API on one Twisted reactor",
    packages=find_packages(include=["glancetx", "glancetx.*"]) + ["twisted.plugins"],
    package_data={
        "glancetx.registry": ["migrations/*.py", "migrations/*.mako",
                              "migrations/versions/*.py"],
    },
    include_package_data=True,
    python_requires=">=3.9",
    install_requires=[
        # streaming.py reads the channel's pending request line (private
        # attributes); tests pin the behaviour, this bounds the version.
        "Twisted[tls]>=24.7,<27",
        "klein>=23.5",
        "treq>=23.11",
        "alchimia==0.8.1",
        "SQLAlchemy>=1.3.24,<1.4",
        "alembic==1.14.1",
        "attrs>=22.2",
        "zope.interface>=5",
        "botocore>=1.31",
        "PyYAML>=6",
        # notifications on RabbitMQ (amqpnotifier.py), through its Twisted adapter
        "pika>=1.3,<2",
    ],
    extras_require={
        "postgresql": ["psycopg2-binary>=2.9"],
        "mysql": ["PyMySQL>=1.0"],
    },
    entry_points={
        "console_scripts": ["glancetx-manage = glancetx.manage:main"],
    },
)
