from backhaul_kit.migrations import run_env
from notifications.adapters.tables import Base

run_env(Base.metadata)
