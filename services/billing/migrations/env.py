from backhaul_kit.migrations import run_env
from billing.adapters.tables import Base

run_env(Base.metadata)
