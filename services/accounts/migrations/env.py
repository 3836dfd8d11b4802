from backhaul_kit.migrations import run_env

from accounts.adapters.tables import Base

run_env(Base.metadata)
