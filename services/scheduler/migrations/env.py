from backhaul_kit.migrations import run_env
from scheduler.adapters.tables import Base

run_env(Base.metadata)
