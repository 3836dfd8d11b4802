from accounts.adapters.tables import Base
from backhaul_kit.migrations import run_env

run_env(Base.metadata)
